"""Model building blocks on core PyTorch primitives: functional ops, layers, the Transformer LM."""
