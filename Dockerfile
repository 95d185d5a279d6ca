# attnbench-server images. Two targets:
#   docker build -t attnbench:gpu .                          # default: CUDA backends + CPU
#   docker build --target runtime-cpu -t attnbench:cpu .     # plain Debian, CPU backend only
# Each build stage runs the repository's own scripts (scripts/build image runs scripts/setup
# --build-only, which installs Debian/Ubuntu packages with apt, and builds the server and CLI
# without the tests; then scripts/bundle gathers them and their non-system shared libraries into
# /opt/attnbench), the steps CI runs when it builds the CPU image (scripts/image, ctest -L image);
# nothing is downloaded outside the distribution's package manager. The runtime stages copy only that
# folder onto a slim base and run as an unprivileged user. Base images are build arguments, so
# a mirror or another CUDA version is one --build-arg away.
ARG CUDA_VERSION=13.0.1
ARG CUDA_BUILD_IMAGE=nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04
ARG CPU_BUILD_IMAGE=debian:bookworm
ARG CPU_RUNTIME_IMAGE=debian:bookworm-slim

# --- GPU build: nvcc is in the image, so CMake builds the CUDA backends (sm_90a and sm_80).
FROM ${CUDA_BUILD_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY . .
RUN bash scripts/build image && bash scripts/bundle build/image/bin /opt/attnbench

# --- CPU build: no nvcc, so the CPU-only service.
FROM ${CPU_BUILD_IMAGE} AS build-cpu
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY . .
RUN bash scripts/build image && bash scripts/bundle build/image/bin /opt/attnbench

# --- CPU runtime. The bundle finds its libraries through its RUNPATH ($ORIGIN/../lib); the base
# provides only glibc and the C++ runtime.
FROM ${CPU_RUNTIME_IMAGE} AS runtime-cpu
RUN groupadd --system --gid 10001 attnbench \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin attnbench
COPY --from=build-cpu /opt/attnbench /opt/attnbench
ENV PATH=/opt/attnbench/bin:${PATH}
USER 10001:10001
# gRPC (with grpc.health.v1 and reflection), then Prometheus /metrics.
EXPOSE 50051 9464
# The CLI speaks grpc.health.v1 Check; a server started with TLS needs its own check command.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["attnbench", "health", "--server=127.0.0.1:50051", "--deadline_seconds=4"]
# SIGTERM drains in-flight runs for --shutdown_grace_seconds (default 10): give `docker stop`
# a longer --time (compose sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["attnbench-server"]
CMD ["--listen_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464"]

# --- GPU runtime (the default target). NVIDIA's runtime image brings cuBLAS, which the server
# loads at run time; the driver's libcuda and libnvidia-ml come from the NVIDIA container
# toolkit (docker run --gpus all).
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
RUN groupadd --system --gid 10001 attnbench \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin attnbench
COPY --from=build /opt/attnbench /opt/attnbench
ENV PATH=/opt/attnbench/bin:${PATH} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
# gRPC (with grpc.health.v1 and reflection), then Prometheus /metrics.
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["attnbench", "health", "--server=127.0.0.1:50051", "--deadline_seconds=4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["attnbench-server"]
CMD ["--listen_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464"]
