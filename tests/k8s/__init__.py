"""Tests of the deployment files: Dockerfile, Kubernetes manifests, Grafana dashboard."""
