"""The embedding model: checkpoint weights, preprocessing, the encoder, its batching scheduler and
the runtime backends it runs on."""
