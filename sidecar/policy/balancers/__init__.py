"""The load balancers, one module per algorithm; `sidecar.policy.balancer` is the public face."""
