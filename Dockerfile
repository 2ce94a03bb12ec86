# The tiering image: CLI, scheduler and workers. `docker compose up` runs the production-like stack.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tiering ./tiering
COPY migrations ./migrations
COPY policies ./policies
RUN pip install --no-cache-dir '.[postgres]'
USER 1000:1000
ENTRYPOINT ["tiering"]
CMD ["--help"]
