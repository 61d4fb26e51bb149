"""The service side used by the command line: endpoints, job operations, the local Redis + Ray stack."""
