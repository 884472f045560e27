"""The automation ladder: rungs, evidence gates, requests a manager approves, automatic rollback."""
