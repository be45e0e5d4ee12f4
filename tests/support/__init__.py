"""What the tests share that is not a test: fakes (each says what it does not model), servers and helpers."""
