"""Drift monitoring: statistics, references, the metric table and the monitor that raises alarms."""
