"""Default schedule rules, per target."""
