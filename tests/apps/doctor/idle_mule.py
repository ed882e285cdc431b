"""A mule that waits and does nothing: whatever kills it is not its own code."""

import time

while True:
    time.sleep(1)
