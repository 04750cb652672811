"""Where a rollout or a CI gate runs (`base.Site`, a few parts): one module per place."""
