"""Wav2Lip (Prajwal et al. 2020) as a lip refiner: our inference code on the official checkpoints."""
