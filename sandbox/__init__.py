"""mathagent.sandbox."""
