"""MGRAL: the LSTM policy, the look-up table, the proxy reward and the REINFORCE agent."""
