"""Handover: clinical review notes, each patient's device history, the NEWS2 log and the ward's handover report."""
