# pg-accumulator: the `accumulator` CLI; `consume` (the worker) by default, `compact` for the sidecar.
# Stage 1 builds the wheel and installs it into a virtualenv; stage 2 copies only that virtualenv onto a clean
# base, so no compiler, pip, pip cache or source tree reaches the final image (SPEC §20). Both stages use the
# same base, so the virtualenv's interpreter path is valid in the second one.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sql/ sql/
COPY registers/ registers/
COPY consumer/ consumer/
# Dependencies ship manylinux wheels, so nothing is compiled; the runtime venv gets no pip of its own.
RUN python3 -m venv /opt/tools \
    && /opt/tools/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /dist . \
    && python3 -m venv --without-pip /opt/accumulator \
    && /opt/tools/bin/pip --python /opt/accumulator/bin/python install --no-cache-dir \
        --disable-pip-version-check /dist/*.whl

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="pg-accumulator" \
      org.opencontainers.image.description="Kafka worker and compactor for the pg-accumulator register engine" \
      org.opencontainers.image.licenses="PostgreSQL"
# A named user: libpq looks the current user up (default role name, ~/.pgpass); numeric USER below so
# Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN useradd --no-log-init --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin accumulator
COPY --from=build /opt/accumulator /opt/accumulator
ENV PATH=/opt/accumulator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 9400 9401
ENTRYPOINT ["accumulator"]
CMD ["consume"]
