# The control-plane image: the same package the wheel holds, on a slim Python, as a non-root user.
# Build:  docker build -t aitb:0.1.0 .
# Used by the Helm chart (helm/aitb) for the API, the scheduler and MLflow (mlflow[auth] is a
# dependency of aitb).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform ./platform
COPY cli ./cli
COPY testbeds ./testbeds
# One wheel of aitb, then wheels of everything it needs: the runtime stage installs offline.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AITB_DATA_DIR=/var/lib/aitb
RUN groupadd --gid 10001 aitb \
 && useradd --uid 10001 --gid 10001 --home-dir /home/aitb --create-home --shell /usr/sbin/nologin aitb \
 && mkdir -p /var/lib/aitb && chown 10001:10001 /var/lib/aitb
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels aitb && rm -rf /wheels
USER 10001:10001
WORKDIR /home/aitb
EXPOSE 8600
ENTRYPOINT ["aitb"]
CMD ["server", "--host", "0.0.0.0"]
