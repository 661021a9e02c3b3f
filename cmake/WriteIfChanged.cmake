# write_if_changed(path content): writes `content` to `path` only when it
# differs, so a build step that regenerates an unchanged file rebuilds
# nothing downstream. Included by the build-time scripts in cmake/.
function(write_if_changed path content)
  if(EXISTS "${path}")
    file(READ "${path}" old)
  else()
    set(old "")
  endif()
  if(NOT old STREQUAL content)
    file(WRITE "${path}" "${content}")
  endif()
endfunction()
