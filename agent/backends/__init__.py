"""mathagent.agent.backends."""
