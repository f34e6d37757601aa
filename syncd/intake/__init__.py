"""What enters: watchdog hints, settle detection, reconciliation scans and routing."""
