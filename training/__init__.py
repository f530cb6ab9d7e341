"""mathagent.training."""
