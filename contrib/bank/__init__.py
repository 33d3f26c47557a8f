"""The bank example: an account service and an email service (see README)."""
