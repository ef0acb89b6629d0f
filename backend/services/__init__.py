"""Services: what users and workers can do (submit, vote, claim, admin, mirror), over the storage layer."""
