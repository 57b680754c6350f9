"""A stand-in for a user's application: job targets the tests point YAML files at."""
