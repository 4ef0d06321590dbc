"""The NSML API side: signing, the signed call, models, paging and retries, and their wiring."""
