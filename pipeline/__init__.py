"""adder: neural networks that learn arithmetic from character strings."""
