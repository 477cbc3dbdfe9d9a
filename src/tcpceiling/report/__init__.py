"""Rendering results for people (rich tables on stderr/terminal); JSON is results.to_data."""
