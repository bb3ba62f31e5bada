"""Remote dev kits: TVM's RPC tracker, kits registered with it (real boards, or an emulated aarch64
kit on this machine), and the rack that spreads measurement jobs over the free kits."""
