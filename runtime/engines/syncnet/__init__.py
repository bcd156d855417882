"""SyncNet (Chung & Zisserman 2016, v2 weights): our inference code on the official `syncnet_v2.model`,
for the LSE-C / LSE-D lip-sync scores."""
