"""The champion at work: a prediction service, batch scoring of a month, and drift monitoring."""
