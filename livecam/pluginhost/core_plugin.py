"""The core's own registrations: the two built-in tier kinds."""

from livecam import hookimpl
from livecam.pluginhost.hookspecs import Register
from livecam.storage.tiers import Tier


@hookimpl
def livecam_register_tiers(register: Register) -> None:
    register("buffer", Tier)
    register("spool", Tier)
