"""The equivalence checks that ship with miniature; the plugin adds them to a gate run."""
