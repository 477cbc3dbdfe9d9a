"""Prediction: a Scenario plus a HostSnapshot give one Constraint per limit and the
binding one (analyze). One module per limit family, listed in registry."""
