"""Where a rollout or a CI gate runs, behind one interface (`base.Site`): one module per place."""
