"""Where engine calls run: in this process (``local``, the default) or on Ray replicas (``ray``).

An executor turns an engine config into an object with the Engine protocol, so the stages never
know which one they got. Both can cut each engine call into shards of ``shard_size`` chats and
run each shard whole, in order (local) or spread over replicas (Ray); results are merged in shard
order. A shard's result depends only on its chats, so the same ``shard_size`` gives the same
bytes on either executor.
"""
