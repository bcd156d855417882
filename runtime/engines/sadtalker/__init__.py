"""Our SadTalker inference engine: its networks on the official checkpoints, resident and batched.

`engine.SadTalkerEngine` is the entry point; one network a file (`recon_net`, `audio2exp`,
`audio2pose`, `mapping_net`, `keypoint_detector`, `dense_motion`, `generator`), hyperparameters in
`config`, strict checkpoint loading in `checkpoint` and `networks`.
"""
