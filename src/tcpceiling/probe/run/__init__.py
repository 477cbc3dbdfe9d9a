"""The probe's run: its options and plan, the coordinator and its phases, the
guards, the measurements, the server's side read before and after, and the result.
A change to how a run is sequenced, guarded, measured or reported lands here."""
