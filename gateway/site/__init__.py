"""The site file: its model and loader, the cross-field rules, the point CSV."""
