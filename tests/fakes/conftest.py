"""Makes the fake-upstream fixtures available to tests under tests/fakes/."""

from tests.fakes.fixtures import fake_upstream, make_fake_upstream  # noqa: F401
