"""Example targets for `scorelab train --objective tsm --target module:function`."""
