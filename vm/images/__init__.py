"""Making the lab's VM images: recipes (images/*.toml) parsed (recipe), built with
mmdebstrap (build, with customize's hooks, mirror, disk, manifest), the lab's SSH
key (ssh_key), and the built images packaged as Vagrant boxes (boxes)."""
