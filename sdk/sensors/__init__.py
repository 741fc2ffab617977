"""Virtual camera sensors: rigs driven along trajectories, frames, a CARLA-style actor layer."""
