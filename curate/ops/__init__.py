"""Operations above the engine: versioned refresh and its versions folder (rollback), and the
local Prefect server ``curate serve`` starts."""
