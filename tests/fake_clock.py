"""A clock for the timing tests: returns ``t``, which the test advances (no real time)."""


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t
