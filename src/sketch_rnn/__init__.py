"""sketch-rnn: the sequence-to-sequence sketch VAE of Ha & Eck (2017), built on lossweave."""
