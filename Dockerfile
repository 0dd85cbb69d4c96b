# One image for every service (one artifact, different commands); see compose.yaml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
COPY devstack ./devstack
COPY examples ./examples
# Editable, so that the demo finds examples/ beside the code (REPO_ROOT is the source tree).
RUN pip install --no-cache-dir -e .
# Deployed apps run as this unprivileged user, never as root (the deployer switches to it).
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin promote-app
ENV PROMOTE_VAR_DIR=/var/lib/promote \
    PYTHONUNBUFFERED=1
EXPOSE 8080
CMD ["promote", "--help"]
