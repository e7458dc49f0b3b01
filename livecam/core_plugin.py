"""The core's own registrations: the two built-in tier kinds."""

from livecam import hookimpl
from livecam.hookspecs import Register
from livecam.tiers import Tier


@hookimpl
def livecam_register_tiers(register: Register) -> None:
    register("buffer", Tier)
    register("spool", Tier)
