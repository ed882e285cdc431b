"""A mule that fails as it starts (a missing setting, say)."""

raise RuntimeError("DOCTOR_APP_QUEUE is not set")
