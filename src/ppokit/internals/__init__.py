"""Code that relies on private attributes of tensordict and torch, in one place.

Everything here is checked against specific releases (see
:func:`ppokit.internals.direct.direct_path_supported`) and is only used where it reproduces
the public path exactly; callers fall back to the public path otherwise.
"""
