"""mathagent.evals."""
