"""The qcow2 engine (read side): header, mapping, compressed clusters, snapshots."""
