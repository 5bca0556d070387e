"""Training, distillation and int8 conversion of the learned pen verifier (off the device)."""
