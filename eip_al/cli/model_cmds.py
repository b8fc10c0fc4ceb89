"""`eip-al train | predict | evaluate`: the model outside the loop."""
