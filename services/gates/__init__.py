"""Gates: evaluates each environment's gates and moves a verified release to the next environment."""
