"""Examples that use the notifier the way an application would: through its public API only."""
