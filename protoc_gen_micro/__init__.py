"""protoc-gen-micro: generates micro-grpc handlers and typed clients from .proto files."""
